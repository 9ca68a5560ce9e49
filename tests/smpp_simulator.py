"""A minimal SMPP 3.4 SMSC for trying a real gateway (Kannel's bearerbox) against dlr-tracker by hand.

    python -m tests.smpp_simulator --port 2775

It accepts any bind, answers enquire_link and unbind, gives every submit_sm a decimal message id, and
then sends the delivery receipt(s) the destination number's last digit asks for (SCENARIOS): a
`deliver_sm` with esm_class 0x04, the Appendix B receipt text, and the receipted_message_id and
message_state TLVs. Every PDU in and out is printed, one line each. Not a test module: pytest does not
collect it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import struct
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

BIND_RECEIVER, BIND_TRANSMITTER, SUBMIT_SM, DELIVER_SM, UNBIND, BIND_TRANSCEIVER = 0x1, 0x2, 0x4, 0x5, 0x6, 0x9
ENQUIRE_LINK, GENERIC_NACK, RESP = 0x15, 0x80000000, 0x80000000
ESME_RINVCMDID, ESME_RINVDSTADR = 0x3, 0xB
TLV_RECEIPTED_MESSAGE_ID, TLV_MESSAGE_STATE = 0x001E, 0x0427
NAMES = {
    0x1: "bind_receiver", 0x2: "bind_transmitter", 0x4: "submit_sm", 0x5: "deliver_sm", 0x6: "unbind",
    0x9: "bind_transceiver", 0x15: "enquire_link", 0x80000000: "generic_nack",
}  # fmt: skip


@dataclass(frozen=True)
class Receipt:
    stat: str
    err: str
    message_state: int  # the TLV value (SMPP 3.4 §5.3.2.35)


# The destination's last digit -> what happens to the message. "refuse" answers the submit with an error.
SCENARIOS: dict[str, tuple[Receipt, ...] | str] = {
    "1": (Receipt("DELIVRD", "000", 2),),
    "2": (Receipt("EXPIRED", "027", 3),),
    "3": (Receipt("UNDELIV", "001", 5),),
    "4": (Receipt("REJECTD", "011", 8),),
    "5": "refuse",
    "6": (Receipt("UNKNOWN", "000", 7),),
    "7": (Receipt("ENROUTE", "000", 1), Receipt("DELIVRD", "000", 2)),
    "8": (Receipt("DELETED", "000", 4),),
    "9": (Receipt("ACCEPTD", "000", 6), Receipt("EXPIRED", "027", 3)),
}
DEFAULT = (Receipt("DELIVRD", "000", 2),)


def pdu_name(command: int) -> str:
    if command == GENERIC_NACK:
        return "generic_nack"
    return NAMES.get(command & ~RESP, hex(command)) + ("_resp" if command & RESP else "")


def cstring(data: bytes, at: int) -> tuple[bytes, int]:
    end = data.index(b"\x00", at)
    return data[at:end], end + 1


@dataclass
class Submit:
    source: bytes
    destination: bytes
    registered_delivery: int
    text: bytes


def parse_submit(body: bytes) -> Submit:
    _service_type, at = cstring(body, 0)
    at += 2  # source ton, npi
    source, at = cstring(body, at)
    at += 2  # dest ton, npi
    destination, at = cstring(body, at)
    at += 3  # esm_class, protocol_id, priority_flag
    _schedule, at = cstring(body, at)
    _validity, at = cstring(body, at)
    registered_delivery = body[at]
    at += 4  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
    length = body[at]
    return Submit(source, destination, registered_delivery, body[at + 1 : at + 1 + length])


def pdu(command: int, sequence: int, body: bytes = b"", status: int = 0) -> bytes:
    return struct.pack(">IIII", 16 + len(body), command, status, sequence) + body


def tlv(tag: int, value: bytes) -> bytes:
    return struct.pack(">HH", tag, len(value)) + value


def receipt_pdu(sequence: int, message_id: str, submit: Submit, receipt: Receipt, submitted: datetime) -> bytes:
    now = datetime.now(UTC)
    text = (
        f"id:{message_id} sub:001 dlvrd:{'001' if receipt.stat == 'DELIVRD' else '000'} "
        f"submit date:{submitted:%y%m%d%H%M} done date:{now:%y%m%d%H%M} stat:{receipt.stat} err:{receipt.err} "
        f"text:"
    ).encode() + submit.text[:20]
    body = (
        b"\x00"  # service_type
        + b"\x01\x01" + submit.destination + b"\x00"  # source: the handset
        + b"\x00\x00" + submit.source + b"\x00"  # destination: the original sender
        + b"\x04\x00\x00"  # esm_class: SMSC delivery receipt; protocol_id; priority
        + b"\x00\x00"  # schedule_delivery_time, validity_period
        + b"\x00\x00\x00\x00"  # registered_delivery, replace_if_present, data_coding, sm_default_msg_id
        + bytes([len(text)]) + text
        + tlv(TLV_RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00")
        + tlv(TLV_MESSAGE_STATE, bytes([receipt.message_state]))
    )  # fmt: skip
    return pdu(DELIVER_SM, sequence, body)


class Session:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, ids: itertools.count[int]) -> None:
        self.reader, self.writer, self.ids = reader, writer, ids
        self.sequence = itertools.count(1)

    def send(self, data: bytes, note: str = "") -> None:
        command, status, sequence = struct.unpack(">III", data[4:16])
        print(f"-> {pdu_name(command)} seq={sequence} status={status:#x} {note}".rstrip(), flush=True)
        self.writer.write(data)

    async def run(self) -> None:
        try:
            while header := await self.reader.readexactly(16):
                length, command, status, sequence = struct.unpack(">IIII", header)
                body = await self.reader.readexactly(length - 16)
                await self.handle(command, status, sequence, body)
        except asyncio.IncompleteReadError:
            print("connection closed", flush=True)

    async def handle(self, command: int, status: int, sequence: int, body: bytes) -> None:
        print(f"<- {pdu_name(command)} seq={sequence} status={status:#x}", flush=True)
        if command in (BIND_RECEIVER, BIND_TRANSMITTER, BIND_TRANSCEIVER):
            self.send(pdu(command | RESP, sequence, b"dlr-sim\x00"))
        elif command in (ENQUIRE_LINK, UNBIND):
            self.send(pdu(command | RESP, sequence))
        elif command == SUBMIT_SM:
            await self.submit(sequence, parse_submit(body))
        elif not command & RESP:
            self.send(pdu(GENERIC_NACK, sequence, status=ESME_RINVCMDID))

    async def submit(self, sequence: int, submit: Submit) -> None:
        scenario = SCENARIOS.get(submit.destination.decode()[-1:], DEFAULT)
        if scenario == "refuse":
            self.send(pdu(SUBMIT_SM | RESP, sequence, b"\x00", ESME_RINVDSTADR), f"to={submit.destination.decode()}")
            return
        message_id = str(next(self.ids))
        submitted = datetime.now(UTC)
        self.send(pdu(SUBMIT_SM | RESP, sequence, message_id.encode() + b"\x00"), f"message_id={message_id}")
        if submit.registered_delivery & 0x03 and not isinstance(scenario, str):
            asyncio.get_running_loop().create_task(self.receipts(message_id, submit, scenario, submitted))

    async def receipts(self, message_id: str, submit: Submit, receipts: tuple[Receipt, ...], when: datetime) -> None:
        for receipt in receipts:
            await asyncio.sleep(1.0)
            self.send(receipt_pdu(next(self.sequence), message_id, submit, receipt, when), f"receipt {receipt.stat}")


async def serve(host: str, port: int) -> None:
    ids = itertools.count(1000000001)
    server = await asyncio.start_server(lambda r, w: Session(r, w, ids).run(), host, port)
    print(f"SMPP simulator on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2775)
    args = parser.parse_args(argv)
    try:
        asyncio.run(serve(args.host, args.port))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
