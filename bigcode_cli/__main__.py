from bigcode_cli.cli.entry import main

main()
