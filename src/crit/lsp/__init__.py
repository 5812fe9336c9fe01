"""`crit lsp`: crit as a Language Server, for editors.

`analysis` compiles an editor's buffer as `crit check` would and indexes what is declared where;
`server` speaks the Language Server Protocol (pygls, over stdio) on top of it.
"""
