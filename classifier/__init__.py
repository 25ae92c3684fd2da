"""authsieve: SPF, DKIM, ARC and DMARC at delivery time; failures filed, never bounced."""

__version__ = "0.1.0"
