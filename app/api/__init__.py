"""HTTP routers (one module per endpoint family), request/response schemas, dependencies, error rendering."""
