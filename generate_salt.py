#!/usr/bin/env python3
"""Print a new random encryption_salt: 16 bytes as 32 hex digits.

With a salt in the config the key is derived once per run instead of once per file (much
faster, above all with encryption_type "cha"); every object still gets its own random nonce.
Keep the salt with the password: restoring needs the password, and reads the salt from
each object, so a lost salt setting never makes a backup unreadable.
"""

import secrets

SALT_BYTES = 16  # the backup format's salt length

if __name__ == "__main__":
    print(secrets.token_hex(SALT_BYTES))
