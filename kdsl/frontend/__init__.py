"""Reading a spec: the parser and its syntax tree."""
