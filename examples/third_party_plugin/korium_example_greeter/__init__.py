"""Example third-party korium plugin: a greeting service."""

from korium_example_greeter.plugin import GREETER, Greeter, GreeterService

__all__ = ["GREETER", "Greeter", "GreeterService"]
