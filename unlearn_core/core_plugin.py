"""The core's own corpora and architecture adapters, registered through the same hooks as plugins."""

from .architectures import BUILTIN_ARCHITECTURES
from .corpora import BUILTIN_CORPORA
from .hookspecs import hookimpl


@hookimpl
def register_corpora(register):
    for corpus in BUILTIN_CORPORA:
        register(corpus)


@hookimpl
def register_architectures(register):
    for arch in BUILTIN_ARCHITECTURES:
        register(arch)
