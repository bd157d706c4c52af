from bigcode_cli.entry import main

main()
