"""AudioGen-Omni tasks (§1, Abstract, spec §1.1): one checkpoint, the task only chooses which
conditions a sample keeps ("permitting arbitrary subsets of conditioning inputs during inference
without retraining", §3.3).

=========  =====  =======  ===========  ============================================
task       video  caption  text stream  paper
=========  =====  =======  ===========  ============================================
v2a        yes    opt.     none         video-to-audio (Table 1), optionally captioned
v2s        yes    opt.     transcript   video-to-speech (Tables 2-3)
v2song     yes    opt.     lyrics       video-to-song
t2a        no     yes      none         text-to-audio
tts        no     yes      transcript   text-to-speech (a speaker description caption)
t2song     no     yes      lyrics       text-to-song / music (empty lyrics: instrumental)
=========  =====  =======  ===========  ============================================

"opt." keeps the caption when the sample has one. Combinations beyond the table (e.g. video + caption
+ lyrics) are the v2* tasks with a caption.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AudioGenOmniTask", "TASKS"]


@dataclass(frozen=True)
class AudioGenOmniTask:
    """Which conditions a task keeps. ``text``: ``"none"``, ``"transcript"`` or ``"lyrics"``."""

    video: bool
    caption: bool
    caption_required: bool
    text: str
    description: str

    @property
    def text_only_alternative(self) -> str:
        return {"none": "t2a", "transcript": "tts", "lyrics": "t2song"}[self.text]


TASKS: dict[str, AudioGenOmniTask] = {
    "v2a": AudioGenOmniTask(True, True, False, "none", "video to audio (+ optional caption)"),
    "v2s": AudioGenOmniTask(True, True, False, "transcript", "video to speech with a transcript"),
    "v2song": AudioGenOmniTask(True, True, False, "lyrics", "video to song with lyrics"),
    "t2a": AudioGenOmniTask(False, True, True, "none", "text to audio"),
    "tts": AudioGenOmniTask(False, True, False, "transcript", "text to speech (caption: the speaker)"),
    "t2song": AudioGenOmniTask(False, True, True, "lyrics", "text to song / music with lyrics"),
}
