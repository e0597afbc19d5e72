package agent

import (
	"log/slog"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) messages: newline-separated assignments such
// as "READY=1" or "STATUS=...".
type Notifier interface {
	Notify(state string)
}

// SystemdNotifier sends to the socket in $NOTIFY_SOCKET, as systemd sets it
// for Type=notify services; without it, it does nothing.
type SystemdNotifier struct {
	Logger *slog.Logger
}

// Notify implements Notifier. Errors are logged at debug level: a lost
// message is not a reason to stop backing up.
func (n SystemdNotifier) Notify(state string) {
	if _, err := daemon.SdNotify(false, state); err != nil && n.Logger != nil {
		n.Logger.Debug("sd_notify failed", "error", err)
	}
}

// WatchdogFromEnv returns systemd's watchdog timeout for this process
// ($WATCHDOG_USEC, when $WATCHDOG_PID is unset or ours), or 0.
func WatchdogFromEnv() (time.Duration, error) {
	return daemon.SdWatchdogEnabled(false)
}
