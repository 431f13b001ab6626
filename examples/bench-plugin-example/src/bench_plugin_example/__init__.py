"""An out-of-tree SafeAlign Bench method, registered through the `bench.methods` entry-point group."""
