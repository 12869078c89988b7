"""`ollafleet import`: read a running network and write the file that describes it. read.py
observes the servers, folder.py indexes copied models folders, build.py turns what was read into
the file's tables, command.py renders and writes the file."""

from reconciler.importer.command import add_arguments, cmd_import, read_network, render

__all__ = ["add_arguments", "cmd_import", "read_network", "render"]
