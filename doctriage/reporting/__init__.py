"""What the audit commands show beyond plain queries: calibration tables (db.audit's rows through
classifier.calibration, the ECE that training and evaluation use) and the HTML report."""
