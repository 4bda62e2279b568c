"""The S3-compatible gateway of the HTTP face (docs/s3.md): gateway.py (the calls),
sigv4.py (AWS Signature Version 4), xml.py (S3's XML), objstore.py (bukt.objects)."""
