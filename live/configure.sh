#!/usr/bin/env bash
# Stage 2, run inside the live root (chroot) after live/overlay/ is copied in: services, users,
# and trimming. Cheap, so it runs on every build.
set -euo pipefail

# Root logs in with no password: this is a single-purpose console stick, and the autologin
# consoles are root already. (SSH is not installed.)
passwd -d root >/dev/null

systemctl enable bootmedia-boot-setup.service systemd-networkd.service >/dev/null 2>&1
systemctl enable getty@tty2.service getty@tty3.service >/dev/null 2>&1
# Nothing here needs the network before the TUI starts; waiting for it costs minutes offline.
systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
# Periodic jobs make no sense on a live system and only slow the first minutes.
for timer in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer; do
    systemctl mask "$timer" >/dev/null 2>&1 || true
done
ln -sf /opt/bootmedia/bin/bootmedia /usr/local/bin/bootmedia
# console-setup keeps compiled copies of the font and keymap; make them from our settings
# (live/overlay/etc/default/) so the first boot does not redo it.
setupcon --force --save-only

# The consoles go straight to the TUI: no legal notice scrolling past first.
: >/etc/motd
touch /root/.hushlogin

# Trim what a console never reads.
rm -rf /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/lintian /var/cache/debconf/*-old
find /usr/share/locale -mindepth 1 -maxdepth 1 ! -name 'locale.alias' -exec rm -rf {} +
rm -f /usr/sbin/policy-rc.d
rm -f /etc/machine-id /var/lib/dbus/machine-id
: >/etc/machine-id # systemd makes a fresh one at each boot
