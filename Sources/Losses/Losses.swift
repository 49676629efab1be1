// Placeholder: the loss kernels' host code lands here.
