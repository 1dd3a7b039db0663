from edgeleuk.cli import main

main()
