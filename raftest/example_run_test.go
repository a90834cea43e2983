package raftest_test

import "testing"

// TestExample_RegisterSurvivesFaults runs the test of the package example (example_test.go),
// so the example is not only compiled but proven to pass.
func TestExample_RegisterSurvivesFaults(t *testing.T) { testRegisterSurvivesFaults(t) }
