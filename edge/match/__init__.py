"""1:1 face comparison: is the live person the template's owner?

Stage parts: :mod:`~edge.match.align` (chip from the face mesh), :mod:`~edge.match.descriptor`
(dlib's face ResNet on LiteRT), :mod:`~edge.match.template` (the controller's template format),
:mod:`~edge.match.session` (per-session evidence, the match decision and its combination with the
liveness verdict). See docs/MATCH.md.
"""
