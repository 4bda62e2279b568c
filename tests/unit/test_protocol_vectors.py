"""The test vectors of docs/protocol.md, byte for byte, against bukt.protocol.

The vectors are read out of the document itself, so the document and the codec cannot
drift apart: a vector that is edited, added or broken fails here.
"""
import ast
import pathlib
import re

import pytest

from bukt import errors, protocol
from bukt.protocol import Command, Status

DOC = pathlib.Path(__file__).resolve().parents[2] / "docs" / "protocol.md"


def _vectors():
    text = DOC.read_text()
    blocks = re.findall(r"^#### (.+?)\n\n```vector\n(.*?)^```", text, re.S | re.M)
    assert len(blocks) >= 30, "docs/protocol.md lost its vectors"
    for title, body in blocks:
        lines = [line for line in body.splitlines() if line.strip()]
        yield pytest.param(lines, id=title)


def _call(line):
    """'SET(rid=3, key=b"k")' -> ("SET", 3, {"key": b"k"})"""
    node = ast.parse(line, mode="eval").body
    assert isinstance(node, ast.Call), line
    fields = {kw.arg: ast.literal_eval(kw.value) for kw in node.keywords}
    return node.func.id, fields.pop("rid"), fields


def _hex(line):
    return bytes.fromhex(line.replace(" ", ""))


@pytest.mark.parametrize("lines", list(_vectors()))
def test_each_vector_encodes_and_decodes_as_written(lines):
    requests = [ln[1:].strip() for ln in lines if ln.startswith(">")]
    responses = [ln[1:].strip() for ln in lines if ln.startswith("<")]
    assert len(responses) == 2, lines

    if len(requests) == 2:
        name, rid, fields = _call(requests[0])
        command = Command[name]
        wire = _hex(requests[1])
        assert protocol.encode_request(command, rid, **fields) == wire
        assert protocol.decode_request(wire) == (command, rid, fields)
    else:
        # A frame the server refuses: it must not decode.
        (raw,) = requests
        wire = _hex(raw)
        with pytest.raises(errors.ProtocolError):
            protocol.decode_request(wire)
        command = Command.PING  # no OK payload is involved below

    name, rid, fields = _call(responses[0])
    status = Status[name]
    wire = _hex(responses[1])
    assert protocol.encode_response(command, status, rid, **fields) == wire
    got_status, got_rid, got_fields = protocol.decode_response(command, wire)
    assert (got_status, got_rid) == (status, rid)
    assert got_fields == fields


def test_every_command_and_error_status_has_a_vector_or_a_row():
    text = DOC.read_text()
    for command in Command:
        assert f"| {command.name} |" in text, command
        assert f"> {command.name}(" in text, f"no vector for {command.name}"
    for status in Status:
        assert f"| {status.name} |" in text, status


def test_every_error_class_has_its_own_status():
    statuses = [protocol.status_for(cls("x")) for cls in errors.ALL]
    assert len(set(statuses)) == len(errors.ALL)
    for cls in errors.ALL:
        assert type(protocol.error_for(protocol.status_for(cls("m")), "m")) is cls
