import { defineConfig } from "vite";

// The built pages ship inside the Python package and are served by the market at /app/.
export default defineConfig({
  base: "/app/",
  build: {
    outDir: "../inferchain/marketplace/webui/static",
    emptyOutDir: true,
    target: "es2022",
    chunkSizeWarningLimit: 1024,
    // Fixed names: the build is committed, so a rebuild changes files in place instead of adding new ones.
    rollupOptions: {
      output: { entryFileNames: "assets/app.js", chunkFileNames: "assets/[name].js", assetFileNames: "assets/[name][extname]" },
    },
  },
});
