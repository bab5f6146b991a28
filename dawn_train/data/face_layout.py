"""Where the synthetic face's features sit and how large they are, in face units (face half-height = 1, y down,
the face centre at 0; x of the image-left feature is negative).

One source for the three places that must agree on the face: the renderer of the dataset
(`synth.render_frame`), its torch twin that makes the probe's training frames (`metrics/synthetic/render.py`)
and the probe's aligned crops (`metrics/synthetic/probe.py`).  A feature moved or resized here moves in all three;
with a copy per place, a face edited in two of them gave a probe trained on one face and tested on another
(held-out eye openness R^2 -0.67).
Changing a value changes every rendered frame: bump `synth.RENDERER_VERSION` with it.
"""

# Eyes, nose and mouth follow the head turn: shift = (YAW_SHIFT sin(yaw), PITCH_SHIFT sin(pitch)).
YAW_SHIFT, PITCH_SHIFT = 0.35, 0.3
YAW_NARROWING = 0.2  # the face ellipse's half width shrinks by this fraction of |sin(yaw)|

HAIR_Y, HAIR_WIDTH, HAIR_HALF_HEIGHT = -0.25, 1.12, 0.95  # hair ellipse: centre y, half width / face's, half height

EYE_X, EYE_Y = 0.34, -0.1  # eye centres (the image-left eye at -EYE_X) before the shift
EYE_HALF_WIDTH = 0.2  # the lid distance is openness x EYE_HALF_WIDTH (openness: the `blink` label)
EYE_OPEN = (0.26, 0.36)  # an identity's openness with open eyes is uniform in this range
BLINK_DEPTH = 0.85  # the middle of a blink closes the eye to (1 - BLINK_DEPTH) x its open openness
BROW_ABOVE, BROW_HALF_WIDTH, BROW_HALF_HEIGHT = 0.2, 0.2, 0.035  # brow centre above the eye's, its ellipse
PUPIL_RADIUS, PUPIL_FOLLOW = 0.08, 0.5  # the pupil moves PUPIL_FOLLOW x the yaw shift further than the eye

NOSE_Y, NOSE_FOLLOW, NOSE_HALF_WIDTH, NOSE_HALF_HEIGHT = 0.18, 1.2, 0.07, 0.1  # the nose: NOSE_FOLLOW x the yaw shift

MOUTH_Y = 0.5  # mouth centre
# Lips (outer ellipse) and the mouth's inside: half height = closed + gain x opening (opening in [0, 1]).
LIPS_HALF_WIDTH, LIPS_CLOSED, LIPS_GAIN = 0.27, 0.06, 0.14
INSIDE_HALF_WIDTH, INSIDE_CLOSED, INSIDE_GAIN = 0.2, 0.01, 0.12
