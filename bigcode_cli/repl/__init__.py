"""`bigcode repl`: an interactive prompt-toolkit session over the generation and classification services.

One small module per piece, in the litecli/ptpython manner: `session` (state and one turn at a time),
`slash` (the slash-command registry, its parser, completion and /help), `actions` (what each slash
command does), `keys` (key bindings), `toolbar`, `transcript` (/save) and `loop` (the interactive
prompt loop and the scripted stdin loop). Model text is streamed by `bigcode_cli.terminal.stream_printer`,
the printer `complete` uses too.
"""
