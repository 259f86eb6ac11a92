"""The two Dask tasks of a job: run the model in scratch, then archive its outputs."""
