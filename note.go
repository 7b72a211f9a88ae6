package otlpretry

import (
	"encoding/json"
	"errors"

	"github.com/otlpretry/otlpretry/spool"
)

// ownerNote is what this process writes about itself into the spool
// folder (spool.WriteNote) for tools that read the folder, such as
// `otlpretry status`: each destination's state ("healthy", "waiting",
// "waiting for credentials") and the cause of its last failure. It holds
// nothing secret: destinations are written without user information or
// query string. The JSON field names are the format tools read.
type ownerNote struct {
	Destinations []noteDestination `json:"destinations"`
}

type noteDestination struct {
	URL   string `json:"url"`
	State string `json:"state"`
	Cause string `json:"cause,omitempty"`
}

// note writes the owner's note when a lane's state or cause changed since
// it was last written. Called by run after each event; it costs a look at
// each lane, and a write only on a change.
func (d *delivery) note() {
	changed := false
	for _, l := range d.order {
		st := l.view.status.Load()
		if st.State != l.notedState || st.Cause != l.notedCause {
			l.notedState, l.notedCause = st.State, st.Cause
			changed = true
		}
	}
	if !changed {
		return
	}
	n := ownerNote{Destinations: make([]noteDestination, 0, len(d.order))}
	for _, l := range d.order {
		n.Destinations = append(n.Destinations, noteDestination{URL: l.dest.String(), State: l.notedState, Cause: l.notedCause})
	}
	b, err := json.Marshal(n)
	if err == nil {
		err = d.spool.WriteNote(b)
	}
	if err != nil && !errors.Is(err, spool.ErrClosed) && !d.noteFailed {
		d.noteFailed = true // advisory: said once
		d.cfg.logger.Warn("otlpretry: cannot write this process's note in the spool folder; otlpretry status will not show its destinations' state", "err", err)
	}
}
