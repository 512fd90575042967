"""The views of `lmcli inspect`, one module each, in the explainers' order. Each has a function
`view(subject, text, cfg) -> ViewResult` that computes its numbers and the panels drawing them."""
