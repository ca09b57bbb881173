// Package fielderr is the error of a request field that does not hold up:
// the planning packages (waves, window) report them, and the admin API
// turns each into a field violation of an InvalidArgument error.
package fielderr

import "strings"

// FieldError is one problem with one input field. Field is the snake_case
// path of the field in the API ("shape.custom.percents[2]"), and Reason
// says what is wrong, for people.
type FieldError struct {
	Field  string
	Reason string
}

// Error returns e.g. "shape.linear.batch_size: must be at least 1".
func (e *FieldError) Error() string { return e.Field + ": " + e.Reason }

// FieldErrors is every problem found with an input, in field order.
// errors.As finds the list, or its first *FieldError.
type FieldErrors []*FieldError

// Error returns the errors joined by "; ".
func (errs FieldErrors) Error() string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// Unwrap returns the *FieldErrors as errors.
func (errs FieldErrors) Unwrap() []error {
	out := make([]error, len(errs))
	for i, e := range errs {
		out[i] = e
	}
	return out
}

// Add appends a problem with field.
func (errs *FieldErrors) Add(field, reason string) {
	*errs = append(*errs, &FieldError{Field: field, Reason: reason})
}
