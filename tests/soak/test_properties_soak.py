"""make soak: the property-based tests of every parser of what the other
side sends (tests/unit/plugins/module_utils/test_properties.py), collected
here with SOAK=1, where tests/conftest.py loads the "soak" Hypothesis profile
(20,000 examples each instead of 300)."""

from __future__ import annotations

from tests.unit.plugins.module_utils.test_properties import (
    test_any_answer_header_gives_a_dict_or_a_refusal,
    test_any_archive_gives_members_or_a_refusal,
    test_any_chunk_stream_gives_an_archive_or_a_refusal,
    test_any_drop_list_gives_storage_names_or_a_refusal,
    test_any_frame_line_gives_a_frame_or_a_refusal,
    test_any_inventory_gives_an_inventory_or_a_refusal,
    test_any_request_bytes_give_a_request_or_a_refusal,
)

__all__ = [  # collected here under SOAK=1
    "test_any_answer_header_gives_a_dict_or_a_refusal",
    "test_any_archive_gives_members_or_a_refusal",
    "test_any_chunk_stream_gives_an_archive_or_a_refusal",
    "test_any_drop_list_gives_storage_names_or_a_refusal",
    "test_any_frame_line_gives_a_frame_or_a_refusal",
    "test_any_inventory_gives_an_inventory_or_a_refusal",
    "test_any_request_bytes_give_a_request_or_a_refusal",
]
