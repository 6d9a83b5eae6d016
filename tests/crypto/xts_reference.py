#!/usr/bin/python3
"""Independent AES-256-XTS oracle for tests/crypto/test_xts.c.

Usage: xts_reference.py encrypt|decrypt KEY DATA SECTORS OUT

KEY holds the 64-byte key (data key, then tweak key), DATA a whole number
of 512-byte sectors, SECTORS one decimal sector number per line (one per
sector of DATA). Every sector is its own XTS data unit whose initial tweak
is 8 zero bytes followed by the sector number as 64-bit little endian.
The result goes to OUT. Exit status 2 on bad input.
"""
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

SECTOR = 512


def main(argv):
    if len(argv) != 6 or argv[1] not in ("encrypt", "decrypt"):
        print(__doc__, file=sys.stderr)
        return 2
    encrypt = argv[1] == "encrypt"
    with open(argv[2], "rb") as f:
        key = f.read()
    with open(argv[3], "rb") as f:
        data = f.read()
    with open(argv[4]) as f:
        sectors = [int(line) for line in f if line.strip()]
    if len(key) != 64 or len(data) != SECTOR * len(sectors):
        print("xts_reference: key must be 64 bytes and data one sector "
              "per listed sector number", file=sys.stderr)
        return 2
    out = bytearray()
    for i, sector in enumerate(sectors):
        tweak = bytes(8) + sector.to_bytes(8, "little")
        cipher = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = cipher.encryptor() if encrypt else cipher.decryptor()
        out += op.update(data[i * SECTOR:(i + 1) * SECTOR]) + op.finalize()
    with open(argv[5], "wb") as f:
        f.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
