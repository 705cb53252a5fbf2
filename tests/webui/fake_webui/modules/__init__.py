"""A small fake of the AUTOMATIC1111 WebUI 1.10 ``modules`` package (tests only).

Each file mirrors the names and signatures the extension's glue uses, written for these tests
(nothing copied); behaviour is reduced to what the glue can observe.
"""
