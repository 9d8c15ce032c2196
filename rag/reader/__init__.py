"""The reader: a QA head on an encoder that scores answer spans in (question, passage) windows (model), and
its folder: weights, metadata and calibration record (folder)."""
