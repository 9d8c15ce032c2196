"""Answering: hybrid retrieval (retrieval), the pipeline that reads the passages and answers with citations or
abstains (qa), the calibrated probability behind that decision (calibration), and the models' owner (models)."""
