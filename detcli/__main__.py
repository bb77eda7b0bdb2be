from detcli.cli import main

main()
