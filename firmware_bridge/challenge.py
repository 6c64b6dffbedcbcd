"""Which face actions a session asks, derived from the controller's nonce.

Both ends run this same code (the runtime imports it; the controller firmware
can too, it is plain MicroPython-compatible Python), so a controller with a
display can show the person what the runtime will ask, and an auditor can
recompute the order of any session from the link key and the START nonce:

    seed  = HMAC-SHA256(link key, nonce || b"challenge")
    order = draw(seed, k)    # k distinct actions, see draw()

The draw is a deterministic, unbiased sampling without replacement from the
action list in ACTIONS order, fed by HMAC-SHA256(seed, counter) blocks (counter
a 4-byte big-endian integer from 0) read one byte at a time; a byte is used
when it is below the largest multiple of the number of remaining choices
(rejection sampling), so every order is equally likely. With ``require_pose``
an order without any of POSE_ACTIONS (a head movement, which the 3-D check
needs) is discarded and the next one drawn from the same stream, so every
order holding a head movement stays equally likely (24 orders for k = 2).
"""

from firmware_bridge.protocol import hmac_sha256

# Wire order of the actions; never reorder, only append (it fixes the draw).
ACTIONS = ("blink", "turn_left", "turn_right", "look_up", "open_mouth", "smile")
POSE_ACTIONS = ("turn_left", "turn_right", "look_up")
LABEL = b"challenge"


def challenge_seed(key, nonce):
    """The per-session seed: HMAC-SHA256(key, nonce || b"challenge")."""
    return hmac_sha256(bytes(key), bytes(nonce) + LABEL)


def _bytes(seed):
    counter = 0
    while True:
        block = hmac_sha256(seed, counter.to_bytes(4, "big"))
        for b in block:
            yield b
        counter += 1


def _pick(stream, n):
    limit = 256 - (256 % n)
    for b in stream:
        if b < limit:
            return b % n
    raise RuntimeError("unreachable")  # pragma: no cover - the stream is endless


def draw(seed, k, actions=ACTIONS, require_pose=True):
    """``k`` distinct actions from ``actions`` (in the order drawn), deterministic in ``seed``."""
    actions = tuple(actions)
    if not 1 <= k <= len(actions):
        raise ValueError("k must be within [1, %d]" % len(actions))
    if require_pose and not any(a in POSE_ACTIONS for a in actions):
        raise ValueError("require_pose needs at least one of " + ", ".join(POSE_ACTIONS))
    stream = _bytes(bytes(seed))
    while True:
        pool = list(actions)
        out = []
        while len(out) < k:
            out.append(pool.pop(_pick(stream, len(pool))))
        if not require_pose or any(a in POSE_ACTIONS for a in out):
            return tuple(out)
