// Package docs holds no code, only the test that keeps the documentation
// honest: every Go snippet in the pages it checks (README.md and the
// docs/ pages listed in checkedDocs) must be an excerpt of the module's compiled source (an
// Example function as a rule), and every error message those pages quote
// as canonlog's output must be what a test or an example checks, so that a
// renamed function or a reworded message fails the build instead of
// leaving the page wrong.
package docs
