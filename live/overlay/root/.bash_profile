# bootmedia live system: the screen (tty1) and the first serial port run the TUI.
# Other consoles (Alt+F2, Alt+F3) give a plain root shell.
[ -f ~/.bashrc ] && . ~/.bashrc
if [ -z "${BOOTMEDIA_SHELL:-}" ]; then
    case "$(tty)" in
        /dev/tty1 | /dev/ttyS0) exec /usr/local/bin/bootmedia-launch ;;
    esac
fi
