"""`bigcode eval`: the correctness of a model, measured as the seed papers did.

problems (HumanEval, its fill-in-the-middle variants, MultiPL-E files) -> completions (a model here, a
server, or a file) -> the sandbox runs each program -> pass@k. Nothing here touches the terminal.
"""
