#!/usr/bin/python3
"""Reads a metadata service the way cloud-init does and prints what it understood.

Usage: /usr/bin/python3 tests/cloudinit_readers.py BASE_URL

Run it with Debian's python3 (the `cloud-init` package installs its modules there), from a
place where BASE_URL is reachable — and where http://169.254.169.254 is too: cloud-init's
OpenStack reader also crawls the EC2 tree at that fixed address.

It uses cloud-init's own readers:
  * cloudinit.sources.helpers.openstack.MetadataReader(BASE_URL).read_v2()
  * cloudinit.sources.helpers.ec2.get_instance_metadata(api_version="latest", metadata_address=BASE_URL)
  * cloudinit.sources.helpers.ec2.get_instance_userdata(api_version="latest", metadata_address=BASE_URL)
(cloud-init 22.4 keeps the EC2 helpers in cloudinit.sources.helpers.ec2; older releases had
them in cloudinit.ec2_utils.)

Prints one JSON object on stdout and exits 0, or explains on stderr and exits 1.
"""

import json
import logging
import sys


def fail(message):
    print(f"cloudinit_readers: {message}", file=sys.stderr)
    sys.exit(1)


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def main():
    if len(sys.argv) != 2:
        fail("usage: cloudinit_readers.py BASE_URL")
    base_url = sys.argv[1].rstrip("/")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        from cloudinit.sources.helpers import ec2, openstack
    except ImportError as e:
        fail(f"cloud-init is not importable ({e}): install the Debian package `cloud-init` "
             "and run this with /usr/bin/python3")

    try:
        results = openstack.MetadataReader(base_url, timeout=5, retries=2).read_v2()
    except Exception as e:  # cloud-init raises several types; all mean failure here
        fail(f"MetadataReader.read_v2() failed: {type(e).__name__}: {e}")
    metadata = results.get("metadata") or {}
    for key in ("uuid", "hostname", "public_keys"):
        if key not in metadata:
            fail(f"meta_data.json has no {key!r}: {metadata!r}")
    seed = metadata.get("random_seed")
    if not isinstance(seed, bytes) or len(seed) != 512:
        fail("random_seed did not decode to 512 bytes")

    ec2_md = ec2.get_instance_metadata(api_version="latest", metadata_address=base_url,
                                       timeout=5, retries=2)
    if not ec2_md:
        fail("the EC2 meta-data tree could not be read (get_instance_metadata returned {})")
    ec2_ud = ec2.get_instance_userdata(api_version="latest", metadata_address=base_url,
                                       timeout=5, retries=2)

    keys = ec2_md.get("public-keys", {})
    summary = {
        "openstack": {
            "instance_id": metadata.get("instance-id"),
            "hostname": metadata.get("local-hostname"),
            "name": metadata.get("name"),
            "availability_zone": metadata.get("availability_zone"),
            "public_keys": metadata.get("public_keys"),
            "keys": metadata.get("keys"),
            "meta": metadata.get("meta"),
            "user_data": text(results.get("userdata")),
            "network_data": results.get("networkdata"),
            "vendor_data": results.get("vendordata"),
            "vendor_data2": results.get("vendordata2"),
            "ec2_instance_id": (results.get("ec2-metadata") or {}).get("instance-id"),
        },
        "ec2": {
            "instance_id": ec2_md.get("instance-id"),
            "hostname": ec2_md.get("hostname"),
            "local_hostname": ec2_md.get("local-hostname"),
            "local_ipv4": ec2_md.get("local-ipv4"),
            "availability_zone": (ec2_md.get("placement") or {}).get("availability-zone"),
            "instance_type": ec2_md.get("instance-type"),
            "public_keys": {name: text(value) for name, value in keys.items()},
            "user_data": text(ec2_ud),
        },
    }
    json.dump(summary, sys.stdout, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
