"""One image to many machines: `bootmedia cast` sends an image as one multicast stream through
udpcast's udp-sender; `bootmedia receive` writes it, fetches what it missed from a fallback
repository, then reads everything back and verifies it. See docs/NETWORK.md."""
