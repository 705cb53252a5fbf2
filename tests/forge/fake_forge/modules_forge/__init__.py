"""Fake of Forge's ``modules_forge`` (a namespace package there): its presence, with ``backend``,
is how the extension recognises Forge 2.x / Neo."""
