from __future__ import annotations

import os
import uuid

import pytest

from evmiddleware.identity import is_valid_id, new_anonymous_id


def test_minted_ids_are_distinct_valid_uuid4_strings():
    ids = [new_anonymous_id() for _ in range(5_000)]
    assert len(set(ids)) == 5_000
    for value in ids[:200]:
        parsed = uuid.UUID(value)
        assert (parsed.version, parsed.variant, str(parsed)) == (4, uuid.RFC_4122, value)
        assert is_valid_id(value)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_hands_out_its_parent_s_pooled_ids():
    new_anonymous_id()  # the pool now holds ids the parent will hand out next
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write_end, ",".join(new_anonymous_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    child = set(os.read(read_end, 10_000).decode().split(","))
    os.close(read_end)
    parent = {new_anonymous_id() for _ in range(10)}
    assert not child & parent
