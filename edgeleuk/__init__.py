"""edgeleuk: the Prellberg & Kramer C-NMC leukaemia-cell classifier, reproduced and deployable.

The embedding API needs no torch::

    from edgeleuk import Classifier
    clf = Classifier.load("model.onnx", backend="auto")
    results = clf.predict_paths(paths)
"""

from __future__ import annotations

from edgeleuk.io.imageheader import limit_opencv

limit_opencv()  # before anything imports cv2: OpenCV reads its pixel cap once, when it loads

__version__ = "0.1.0"
__all__ = ["Classifier", "__version__"]


def __getattr__(name: str):
    # Lazy: importing edgeleuk must stay cheap and torch-free.
    if name == "Classifier":
        from edgeleuk.runtime.classifier import Classifier

        return Classifier
    raise AttributeError(name)
