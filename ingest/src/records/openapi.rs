//! OpenAPI schemas of the record kinds, generated from the definitions.
