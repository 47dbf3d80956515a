"""The upper-layer bytes the C-STORE receive path reads and writes, against pynetdicom's own."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import P_DATA_TF

from voxelhub.store.dimse.errors import DimseProtocolError
from voxelhub.store.dimse.wire import (
    StoreRequest,
    decode_command,
    p_data_tf,
    part10_prefix,
    pdvs,
    store_request,
    store_response,
)

SOP_INSTANCE_UID = "1.2.826.0.1.3680043.8.498.1"  # odd length: padded on the wire


def _pynetdicom_store_rq(dataset: bytes, *, max_pdu: int) -> list[bytes]:
    """The P-DATA-TF PDUs pynetdicom's SCU sends for a C-STORE-RQ."""
    primitive = C_STORE()
    primitive.MessageID = 7
    primitive.AffectedSOPClassUID = CTImageStorage
    primitive.AffectedSOPInstanceUID = SOP_INSTANCE_UID
    primitive.Priority = 2
    primitive.DataSet = BytesIO(dataset)
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    pdus = []
    for p_data in message.encode_msg(3, max_pdu):
        pdu = P_DATA_TF()
        pdu.from_primitive(p_data)
        pdus.append(pdu.encode())
    return pdus


@pytest.mark.parametrize("max_pdu", [0, 16382])
def test_a_pynetdicom_c_store_rq_is_read(max_pdu: int) -> None:
    dataset = bytes(range(256)) * 200
    fragments = [
        pdv for pdu in _pynetdicom_store_rq(dataset, max_pdu=max_pdu) for pdv in pdvs(pdu[6:])
    ]
    command, *data = fragments
    assert command.is_command and command.is_last and command.context_id == 3
    request = store_request(decode_command(command.fragment))
    assert request == StoreRequest(7, CTImageStorage, SOP_INSTANCE_UID)
    assert not any(pdv.is_command for pdv in data)
    assert [pdv.is_last for pdv in data] == [False] * (len(data) - 1) + [True]
    assert b"".join(pdv.fragment for pdv in data) == dataset


def test_commands_other_than_a_c_store_rq_are_not_taken() -> None:
    echo = {0x0100: (0x0030).to_bytes(2, "little"), 0x0110: (1).to_bytes(2, "little")}
    assert store_request(echo) is None
    no_dataset = {
        0x0002: CTImageStorage.encode() + b"\x00",
        0x0100: (0x0001).to_bytes(2, "little"),
        0x0110: (1).to_bytes(2, "little"),
        0x0800: (0x0101).to_bytes(2, "little"),
        0x1000: SOP_INSTANCE_UID.encode() + b"\x00",
    }
    assert store_request(no_dataset) is None


@pytest.mark.parametrize("comment", [None, "UID conflict: other content is stored"])
def test_the_c_store_rsp_decodes_as_pynetdicom_reads_it(comment: str | None) -> None:
    request = StoreRequest(7, CTImageStorage, SOP_INSTANCE_UID)
    command = decode(BytesIO(store_response(request, 0xA900, error_comment=comment)), True, True)
    assert (
        command.CommandGroupLength
        == len(store_response(request, 0xA900, error_comment=comment)) - 12
    )
    assert command.CommandField == 0x8001 and command.CommandDataSetType == 0x0101
    assert command.MessageIDBeingRespondedTo == 7 and command.Status == 0xA900
    assert command.AffectedSOPClassUID == CTImageStorage
    assert command.AffectedSOPInstanceUID == SOP_INSTANCE_UID
    assert command.get("ErrorComment") == comment


@pytest.mark.parametrize("max_pdu_length", [0, 64, 1000])
def test_pdus_fit_the_peer_maximum(max_pdu_length: int) -> None:
    data = bytes(range(200)) * 3
    encoded = p_data_tf(5, data, is_command=True, max_pdu_length=max_pdu_length)
    pdus = []
    while encoded:
        length = 6 + int.from_bytes(encoded[2:6], "big")
        pdus.append(encoded[:length])
        encoded = encoded[length:]
    assert all(max_pdu_length == 0 or len(pdu) - 6 <= max_pdu_length for pdu in pdus)
    items = [pdv for pdu in pdus for pdv in pdvs(pdu[6:])]
    assert b"".join(pdv.fragment for pdv in items) == data
    assert all(pdv.is_command and pdv.context_id == 5 for pdv in items)
    assert [pdv.is_last for pdv in items] == [False] * (len(items) - 1) + [True]


def test_a_maximum_too_small_for_any_data_is_refused() -> None:
    with pytest.raises(DimseProtocolError, match="holds no data"):
        p_data_tf(1, b"data", is_command=True, max_pdu_length=6)


def test_the_part10_prefix_makes_a_file_pydicom_reads() -> None:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Wire^Test"
    body = encode(ds, False, True)  # explicit VR little endian, as negotiated
    assert body is not None
    request = StoreRequest(1, CTImageStorage, str(ds.SOPInstanceUID))
    prefix = part10_prefix(
        request,
        ExplicitVRLittleEndian,
        implementation_class_uid=PYNETDICOM_IMPLEMENTATION_UID,
        implementation_version_name=PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    read = dcmread(BytesIO(prefix + body))
    meta = read.file_meta
    assert meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert meta.MediaStorageSOPClassUID == CTImageStorage
    assert meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert meta.ImplementationClassUID == PYNETDICOM_IMPLEMENTATION_UID
    assert meta.ImplementationVersionName == PYNETDICOM_IMPLEMENTATION_VERSION
    assert meta.FileMetaInformationGroupLength == len(prefix) - 132 - 12
    assert read.PatientName == "Wire^Test"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\x00\x00\x00\x10\x01\x03abc", "does not hold"),  # item longer than the PDU
        (b"\x00\x00\x00", "inside an item header"),
    ],
)
def test_broken_p_data_is_refused(body: bytes, message: str) -> None:
    with pytest.raises(DimseProtocolError, match=message):
        list(pdvs(body))


def test_a_broken_command_set_is_refused() -> None:
    good = store_response(StoreRequest(1, CTImageStorage, SOP_INSTANCE_UID), 0)
    with pytest.raises(DimseProtocolError):
        decode_command(good[:-3])
    with pytest.raises(DimseProtocolError, match="group-0000"):
        decode_command(b"\x08\x00\x10\x00\x02\x00\x00\x00ab")
