"""A small fake of SD.Next's ``modules`` package (vladmandic/sdnext 058a7f0c), tests only.

Each file mirrors the names, signatures and the behaviour the extension can observe at that commit
(path:line references in docs/hosts/sdnext.md and in the docstrings); the bodies are written
for these tests, nothing is copied. Generations run real diffusers pipelines (tiny random weights).
"""
