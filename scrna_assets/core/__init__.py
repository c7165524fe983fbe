"""The science of scrna_assets: plain functions, no Dagster, so it can be tested and reused alone."""
