//go:build !race

package otlpretry_test

// raceEnabled lets the end-to-end tests lower their load under the race
// detector, which slows span creation and export several times over.
const raceEnabled = false
