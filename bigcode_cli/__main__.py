from bigcode_cli.cli import main

main()
