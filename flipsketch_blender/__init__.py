"""FlipSketch for Blender: animate a Grease Pencil drawing from a motion prompt.

The add-on stays thin: it imports only bpy, numpy and the standard library and
talks to the FlipSketch backend (a separate process that owns torch and the
GPU) over HTTP. Imports go one way: the UI modules (operators, panels,
storyboard, training) use the job runtime (runtime), which uses the
preferences, the importer and the backend connection.
"""

from . import operators, panels, preferences, properties, runtime, storyboard, training

_modules = (preferences, properties, runtime, operators, training, panels, storyboard)


def register() -> None:
    for module in _modules:
        module.register()


def unregister() -> None:
    runtime.shutdown()
    for module in reversed(_modules):
        module.unregister()
