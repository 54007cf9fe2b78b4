package sandbox

import (
	"regexp"
	"strings"
)

// CoordinatorPermission is the permission of the coordinator's user on vhost in the broker
// layout with least privilege of docs/security.md: it declares the topology and every
// participant's queue, publishes commands and final notices, and consumes replies.
func CoordinatorPermission(user, vhost string) Permission {
	return Permission{User: user, VHost: vhost,
		Configure: `^sagacoord\.(commands|replies|dead|finals|dead\.letters|coordinator\.replies|participant\..+)$`,
		Write:     `^sagacoord\.(commands|dead|finals|dead\.letters|coordinator\.replies|participant\..+)$`,
		Read:      `^sagacoord\.(commands|replies|dead|coordinator\.replies|participant\..+)$`,
	}
}

// ParticipantPermission is the permission, in the same layout, of a user that runs the given
// participants (one, or several in one process as participant-sim does): it configures nothing,
// publishes replies, reads the participants' queues, and binds them to the final notices.
func ParticipantPermission(user, vhost string, participants ...string) Permission {
	names := make([]string, len(participants))
	for i, p := range participants {
		names[i] = regexp.QuoteMeta(p)
	}
	queues := strings.Join(names, "|")
	if len(names) > 1 {
		queues = "(" + queues + ")"
	}
	return Permission{User: user, VHost: vhost, Configure: `^$`,
		Write: `^sagacoord\.(replies|participant\.` + queues + `)$`,
		Read:  `^sagacoord\.(participant\.` + queues + `(:twopc)?|finals)$`,
	}
}
