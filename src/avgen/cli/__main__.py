from avgen.cli import main

main()
