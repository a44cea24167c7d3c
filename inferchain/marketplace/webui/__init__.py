"""The dApp web UI: the JSON routes its pages need (network, operator, browser chat with wallet-countersigned
receipts, history) and the built static assets (web/ compiled into static/), mounted on the market's app.

Owns its own tables (webui_*) on the market's engine. Reads the chain through `inferchain.wallet`, runs chats through
`inferchain.client`, calls into the gateway's runners; it never holds a buyer's key and never edits gateway state.
"""
