"""Request and session ids: UUIDv7 strings (36 characters, time-ordered to the millisecond).

Its own module, so the log writer's process makes session ids without importing the gateway.
"""

from __future__ import annotations

import random
import time
import uuid
from typing import Final

# Our own generator, not the module's: the global one is another program's to seed
# (hypothesis checks that nothing else draws from it)
_IDS: Final = random.Random()


def new_request_id() -> str:
    """A UUIDv7: time-ordered, so ids sort by arrival and make a keyset for paging."""
    ms = time.time_ns() // 1_000_000
    # not os.urandom: it releases the GIL, then waits to get it back behind other threads
    rand = _IDS.getrandbits(80)
    rand_a, rand_b = (rand >> 68) & 0xFFF, rand & ((1 << 62) - 1)
    return str(uuid.UUID(int=(ms << 80) | (0x7 << 76) | (rand_a << 64) | (0b10 << 62) | rand_b))
